//! What a request may cost before the model runs: an upper bound on its prompt tokens and the
//! most output it may produce, read from the validated body.
//!
//! # The prompt bound
//!
//! No tokenizer is exact for every model the gateway fronts (Llama, Mistral, Qwen, Gemma and
//! GPT tokenizers disagree by 30 % and more on the same text), and a count from the wrong
//! tokenizer can be *lower* than the upstream's, so the estimate is a bound, made tight where
//! the tokenizer is known ([`TextCounter`]: OpenAI's own tables for OpenAI model names):
//!
//! - every string (message text, tool schemas, names) counts its UTF-8 bytes plus one (or its
//!   BPE tokens plus one), every object key its bytes, every number its decimal digits, every
//!   other scalar one;
//! - every object and array adds two, for the special tokens a chat template wraps around a
//!   message or a tool;
//! - every request adds `prompt_overhead_tokens` (default 32) for the template's fixed text;
//! - every image part counts `image_tokens` (default 2048) instead of its URL or data.
//!
//! Byte-level BPE tokenizers (GPT-2/cl100k/o200k, Llama 3, Qwen, Mistral Tekken) never emit
//! more tokens than bytes; SentencePiece with byte fallback (Llama 2, Mistral 7B, Gemma) emits
//! at most one token per byte plus a leading `▁`, the "plus one" per string. So the bound holds
//! for all of them unless a template injects more than `prompt_overhead_tokens` of its own text
//! (a long default system prompt), an image costs more than `image_tokens`, or the upstream
//! adds context the gateway cannot see (`previous_response_id`). It over-reserves English prose
//! about 4× (about 4 bytes a token), which settlement gives back when the response reports its
//! usage; docs/ratelimit.md says more.

use infergate_config::TokenCount;
use infergate_policy::Schema;
use serde_json::{Map, Value};

/// How the bound is computed (`rate_limit.tokens`).
#[derive(Clone, Copy)]
pub struct EstimateRules {
    pub image_tokens: u64,
    pub prompt_overhead_tokens: u64,
    pub default_max_output_tokens: u64,
    /// How a string of text is counted.
    pub text: TextCounter,
}

/// How a string of prompt text is counted: its UTF-8 bytes (an upper bound for every
/// byte-level and byte-fallback tokenizer), or, for a model whose tokenizer is known and
/// embedded (OpenAI's o200k and cl100k BPE tables, from tiktoken-rs), that tokenizer's count.
#[derive(Clone, Copy)]
pub enum TextCounter {
    Bytes,
    Bpe(&'static tiktoken_rs::CoreBPE),
}

impl std::fmt::Debug for TextCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TextCounter::Bytes => "Bytes",
            TextCounter::Bpe(_) => "Bpe",
        })
    }
}

impl TextCounter {
    /// The counter for a request naming `model`: OpenAI's tokenizer for OpenAI model names
    /// (`tokenizer: auto`), the byte bound for every other model or with `tokenizer: bytes`.
    /// The tables are loaded on the first request that needs them.
    pub fn for_model(tokenizer: infergate_config::Tokenizer, model: Option<&str>) -> Self {
        if tokenizer == infergate_config::Tokenizer::Bytes {
            return TextCounter::Bytes;
        }
        let Some(model) = model.map(str::to_ascii_lowercase) else {
            return TextCounter::Bytes;
        };
        const O200K: &[&str] = &[
            "gpt-4o",
            "gpt-4.1",
            "gpt-4.5",
            "gpt-5",
            "chatgpt-4o",
            "gpt-oss",
            "o1",
            "o3",
            "o4",
        ];
        const CL100K: &[&str] = &["gpt-4", "gpt-3.5", "text-embedding-3", "text-embedding-ada"];
        if O200K.iter().any(|p| model.starts_with(p)) {
            TextCounter::Bpe(tiktoken_rs::o200k_base_singleton())
        } else if CL100K.iter().any(|p| model.starts_with(p)) {
            TextCounter::Bpe(tiktoken_rs::cl100k_base_singleton())
        } else {
            TextCounter::Bytes
        }
    }

    /// Tokens `s` may take, plus one (a tokenizer may split at a string's edges differently
    /// when the template joins it to its neighbours).
    fn count(&self, s: &str) -> u64 {
        match self {
            TextCounter::Bytes => s.len() as u64 + 1,
            TextCounter::Bpe(bpe) => bpe.encode_ordinary(s).len() as u64 + 1,
        }
    }
}

/// One request's cost bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Estimate {
    /// Upper bound on the prompt's tokens.
    pub prompt: u64,
    /// Most output tokens the request may produce (the default cap where it named none).
    pub max_output: u64,
    /// The body names no output maximum somewhere: the forwarded request must get the default.
    pub needs_cap: bool,
}

impl Estimate {
    /// The tokens a limit counting `count` reserves for this request.
    pub fn reservation(&self, count: TokenCount) -> u64 {
        match count {
            TokenCount::Input => self.prompt,
            TokenCount::Output => self.max_output,
            TokenCount::Total => self.prompt.saturating_add(self.max_output),
        }
    }
}

/// Upper bound of the tokens `v` renders to (see the module doc).
fn bound(v: &Value, rules: &EstimateRules) -> u64 {
    match v {
        Value::String(s) => rules.text.count(s),
        Value::Number(n) => digits(n),
        Value::Null | Value::Bool(_) => 1,
        Value::Array(items) => items
            .iter()
            .fold(2u64, |acc, item| acc.saturating_add(bound(item, rules))),
        Value::Object(obj) if is_image(obj) => rules.image_tokens,
        Value::Object(obj) => obj.iter().fold(2u64, |acc, (k, v)| {
            acc.saturating_add(k.len() as u64)
                .saturating_add(bound(v, rules))
        }),
    }
}

fn digits(n: &serde_json::Number) -> u64 {
    // A token id or a small number is one or a few digits; formatting is not worth it.
    match n.as_u64() {
        Some(u) => u64::from(u.checked_ilog10().unwrap_or(0)) + 1,
        None => n.to_string().len() as u64,
    }
}

/// An image content part (OpenAI's `image_url`, the Responses API's `input_image`).
fn is_image(obj: &Map<String, Value>) -> bool {
    matches!(
        obj.get("type").and_then(Value::as_str),
        Some("image_url" | "input_image" | "image")
    )
}

/// The fields of `obj` that reach the prompt, bounded.
fn prompt_of(obj: &Map<String, Value>, fields: &[&str], rules: &EstimateRules) -> u64 {
    fields
        .iter()
        .filter_map(|f| obj.get(*f))
        .fold(rules.prompt_overhead_tokens, |acc, v| {
            acc.saturating_add(bound(v, rules))
        })
}

/// A request's output maximum: the largest of `fields` it sets (an upstream honours one of
/// them), times its choices; `None` when it sets none.
fn output_of(obj: &Map<String, Value>, fields: &[&str], choices: u64) -> Option<u64> {
    fields
        .iter()
        .filter_map(|f| obj.get(*f).and_then(crate::validate::whole_number))
        .filter_map(|n| u64::try_from(n).ok())
        .max()
        .map(|n| n.saturating_mul(choices.max(1)))
}

fn choices(obj: &Map<String, Value>, fields: &[&str]) -> u64 {
    fields
        .iter()
        .filter_map(|f| obj.get(*f).and_then(crate::validate::whole_number))
        .filter_map(|n| u64::try_from(n).ok())
        .max()
        .unwrap_or(1)
}

/// The field the default cap is written to when a request names no maximum.
pub fn cap_field(schema: Schema) -> Option<&'static str> {
    match schema {
        Schema::ChatCompletions | Schema::Completions | Schema::Inference => Some("max_tokens"),
        Schema::Responses => Some("max_output_tokens"),
        _ => None,
    }
}

/// One item of cost: the prompt fields and the output maximum of a request (or batch item).
fn single(obj: &Map<String, Value>, schema: Schema, rules: &EstimateRules) -> Option<Estimate> {
    let (prompt_fields, out_fields, choice_fields): (&[&str], &[&str], &[&str]) = match schema {
        Schema::ChatCompletions => (
            &[
                "messages",
                "tools",
                "functions",
                "tool_choice",
                "response_format",
            ],
            &["max_tokens", "max_completion_tokens"],
            &["n"],
        ),
        Schema::Completions => (&["prompt", "suffix"], &["max_tokens"], &["n", "best_of"]),
        Schema::Responses => (
            &["input", "instructions", "tools", "tool_choice", "text"],
            &["max_output_tokens"],
            &[],
        ),
        Schema::Inference => (&["prompt"], &["max_tokens"], &[]),
        Schema::Embeddings => (&["input"], &[], &[]),
        _ => return None,
    };
    let prompt = prompt_of(obj, prompt_fields, rules);
    if out_fields.is_empty() {
        return Some(Estimate {
            prompt,
            max_output: 0,
            needs_cap: false,
        });
    }
    let n = choices(obj, choice_fields);
    Some(match output_of(obj, out_fields, n) {
        Some(max_output) => Estimate {
            prompt,
            max_output,
            needs_cap: false,
        },
        None => Estimate {
            prompt,
            max_output: rules.default_max_output_tokens.saturating_mul(n),
            needs_cap: true,
        },
    })
}

/// The cost bound of a validated body on a metered route; `None` for other routes (or a body
/// that is not what its schema says, which validation has refused already).
pub fn estimate(schema: Schema, body: &Value, rules: &EstimateRules) -> Option<Estimate> {
    let obj = body.as_object()?;
    if schema == Schema::InferenceBatch {
        let items = obj.get("requests")?.as_array()?;
        return items.iter().try_fold(Estimate::default(), |acc, item| {
            let e = single(item.as_object()?, Schema::Inference, rules)?;
            Some(Estimate {
                prompt: acc.prompt.saturating_add(e.prompt),
                max_output: acc.max_output.saturating_add(e.max_output),
                needs_cap: acc.needs_cap || e.needs_cap,
            })
        });
    }
    single(obj, schema, rules)
}

/// Writes the default output cap into every request (or batch item) of `body` that names none,
/// so the reservation is a true upper bound of what the upstream may produce.
pub fn apply_default_cap(schema: Schema, body: &mut Value, cap: u64) {
    let set = |obj: &mut Map<String, Value>, field: &str, out: &[&str]| {
        if !out
            .iter()
            .any(|f| obj.get(*f).is_some_and(|v| !v.is_null()))
        {
            obj.insert(field.to_owned(), Value::from(cap));
        }
    };
    match schema {
        Schema::InferenceBatch => {
            if let Some(items) = body.get_mut("requests").and_then(Value::as_array_mut) {
                for item in items.iter_mut().filter_map(Value::as_object_mut) {
                    set(item, "max_tokens", &["max_tokens"]);
                }
            }
        }
        Schema::ChatCompletions => {
            if let Some(obj) = body.as_object_mut() {
                set(obj, "max_tokens", &["max_tokens", "max_completion_tokens"]);
            }
        }
        other => {
            if let (Some(field), Some(obj)) = (cap_field(other), body.as_object_mut()) {
                set(obj, field, &[field]);
            }
        }
    }
}

/// Asks the upstream for usage on a stream (`stream_options.include_usage`, which OpenAI, vLLM
/// and llama.cpp honour). Returns whether the client asked for it itself: when it did not, the
/// usage chunk is taken out of its stream again.
pub fn request_stream_usage(schema: Schema, body: &mut Value) -> bool {
    if !matches!(schema, Schema::ChatCompletions | Schema::Completions) {
        return true;
    }
    let Some(obj) = body.as_object_mut() else {
        return true;
    };
    if obj.get("stream").and_then(Value::as_bool) != Some(true) {
        return true;
    }
    let options = obj
        .entry("stream_options")
        .or_insert_with(|| Value::Object(Map::new()));
    if !options.is_object() {
        *options = Value::Object(Map::new());
    }
    let Some(options) = options.as_object_mut() else {
        return true;
    };
    let asked = options.get("include_usage").and_then(Value::as_bool) == Some(true);
    options.insert("include_usage".to_owned(), Value::Bool(true));
    asked
}

/// Whether the request streams its response.
pub fn streams(body: &Value) -> bool {
    body.get("stream").and_then(Value::as_bool) == Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RULES: EstimateRules = EstimateRules {
        image_tokens: 1000,
        prompt_overhead_tokens: 32,
        default_max_output_tokens: 256,
        text: TextCounter::Bytes,
    };

    #[test]
    fn openai_models_are_counted_with_their_own_tokenizer() {
        use infergate_config::Tokenizer;
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(20);
        let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]});
        let bpe = EstimateRules {
            text: TextCounter::for_model(Tokenizer::Auto, Some("gpt-4o-mini")),
            ..RULES
        };
        let by_bpe = estimate(Schema::ChatCompletions, &body, &bpe)
            .unwrap()
            .prompt;
        let by_bytes = estimate(Schema::ChatCompletions, &body, &RULES)
            .unwrap()
            .prompt;
        // o200k: about 10 tokens a sentence; the byte bound counts 45 bytes a sentence.
        let exact = tiktoken_rs::o200k_base_singleton()
            .encode_ordinary(&text)
            .len() as u64;
        assert!(
            by_bpe >= exact && by_bpe < exact + 80,
            "{by_bpe} vs {exact}"
        );
        assert!(by_bytes > 3 * by_bpe, "{by_bytes} vs {by_bpe}");
        for model in ["llama-3.1-8b", "mistral-7b", "echo-1"] {
            assert!(matches!(
                TextCounter::for_model(Tokenizer::Auto, Some(model)),
                TextCounter::Bytes
            ));
        }
        assert!(matches!(
            TextCounter::for_model(Tokenizer::Bytes, Some("gpt-4o")),
            TextCounter::Bytes
        ));
    }

    #[test]
    fn the_prompt_bound_is_at_least_the_bytes_of_every_text() {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "héllo wörld"}]});
        let e = estimate(Schema::ChatCompletions, &body, &RULES).unwrap();
        let text = "héllo wörld".len() as u64 + "user".len() as u64;
        assert!(e.prompt >= text + 32, "{e:?}");
        assert_eq!((e.max_output, e.needs_cap), (256, true));
    }

    #[test]
    fn images_count_their_configured_tokens_not_their_data() {
        let data = format!("data:image/png;base64,{}", "A".repeat(100_000));
        let body = json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": data}}
        ]}], "max_tokens": 10});
        let e = estimate(Schema::ChatCompletions, &body, &RULES).unwrap();
        assert!(e.prompt > 1000 && e.prompt < 1200, "{e:?}");
        assert_eq!((e.max_output, e.needs_cap), (10, false));
    }

    #[test]
    fn output_is_the_largest_maximum_times_the_choices() {
        let body = json!({"model": "m", "prompt": "x", "max_tokens": 50, "n": 2, "best_of": 3});
        let e = estimate(Schema::Completions, &body, &RULES).unwrap();
        assert_eq!(e.max_output, 150);
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 10, "max_completion_tokens": 40});
        let e = estimate(Schema::ChatCompletions, &body, &RULES).unwrap();
        assert_eq!(e.max_output, 40);
        assert_eq!(e.reservation(TokenCount::Output), 40);
        assert_eq!(e.reservation(TokenCount::Input), e.prompt);
    }

    #[test]
    fn a_batch_sums_its_items_and_each_gets_the_cap() {
        let mut body = json!({"requests": [{"prompt": "a", "max_tokens": 5}, {"prompt": "b"}]});
        let e = estimate(Schema::InferenceBatch, &body, &RULES).unwrap();
        assert_eq!(e.max_output, 5 + 256);
        assert!(e.needs_cap);
        assert!(e.prompt >= 2 * 32);
        apply_default_cap(Schema::InferenceBatch, &mut body, 256);
        assert_eq!(body["requests"][0]["max_tokens"], 5);
        assert_eq!(body["requests"][1]["max_tokens"], 256);
    }

    #[test]
    fn embeddings_reserve_no_output() {
        let body = json!({"model": "m", "input": ["a", "b"]});
        let e = estimate(Schema::Embeddings, &body, &RULES).unwrap();
        assert_eq!((e.max_output, e.needs_cap), (0, false));
        assert!(estimate(Schema::Any, &body, &RULES).is_none());
    }

    #[test]
    fn stream_usage_is_asked_for_and_the_clients_wish_remembered() {
        let mut body = json!({"stream": true});
        assert!(!request_stream_usage(Schema::ChatCompletions, &mut body));
        assert_eq!(body["stream_options"]["include_usage"], true);
        let mut body = json!({"stream": true, "stream_options": {"include_usage": true}});
        assert!(request_stream_usage(Schema::ChatCompletions, &mut body));
        let mut body = json!({"stream": false});
        assert!(request_stream_usage(Schema::ChatCompletions, &mut body));
        assert!(body.get("stream_options").is_none());
    }
}
