"""The official OpenAI Python SDK against the gateway: a client nobody here wrote.

Run by scripts/schemathesis.sh (so `make test`) with the stack it starts; exits non-zero on the
first call that does not work. Covers the calls real users make: chat (plain and streamed),
completions, embeddings, models, and the audio upload (multipart) that used to be refused.
"""
import io
import sys

import openai

base, user_key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=f"{base}/v1", api_key=user_key, max_retries=0, timeout=30)
checks = 0


def check(cond, what):
    global checks
    if not cond:
        print(f"FAILED: {what}")
        sys.exit(1)
    checks += 1


models = client.models.list()
check(any(m.id == "echo-1" for m in models.data), "models.list names echo-1")

chat = client.chat.completions.create(
    model="echo-1", messages=[{"role": "user", "content": "hello sdk"}], max_tokens=16
)
check("hello sdk" in (chat.choices[0].message.content or ""), "chat.completions echoes")

parts = [
    c.choices[0].delta.content or ""
    for c in client.chat.completions.create(
        model="echo-1",
        messages=[{"role": "user", "content": "stream me"}],
        stream=True,
        stream_options={"include_usage": False},
    )
    if c.choices
]
check("stream me" in "".join(parts), "streamed chat arrives in chunks")

comp = client.completions.create(model="echo-1", prompt="complete me", max_tokens=8)
check(comp.choices and comp.choices[0].text is not None, "completions")

emb = client.embeddings.create(model="echo-1", input=["a", "b"])
check(len(emb.data) == 2, "embeddings")

audio = io.BytesIO(b"RIFF" + bytes(range(256)) * 4096)  # ~1 MiB, multipart upload
audio.name = "clip.wav"
tr = client.audio.transcriptions.create(model="whisper-1", file=audio)
check(tr.text.startswith("received"), f"audio.transcriptions upload passes ({tr.text})")

try:
    client.post("/load_lora_adapter", body={"lora_name": "x", "lora_path": "/tmp"}, cast_to=object)
    check(False, "a user key may not load LoRA adapters")
except openai.PermissionDeniedError:
    check(True, "load_lora_adapter is admin-only")

try:
    client.chat.completions.create(model="echo-1", messages=[], max_tokens=1)
    check(False, "an empty messages list is refused")
except openai.UnprocessableEntityError as e:
    check(e.response.json().get("code") == "validation_error", "422 with the gateway's code")

# The rate-limit headers the SDK's users read (OpenAI's own names), through with_raw_response.
raw = client.chat.completions.with_raw_response.create(
    model="echo-1", messages=[{"role": "user", "content": "headers"}], max_tokens=4
)
limit = raw.headers.get("x-ratelimit-limit-requests")
remaining = raw.headers.get("x-ratelimit-remaining-requests")
reset = raw.headers.get("x-ratelimit-reset-requests") or ""
check(limit is not None and limit.isdigit(), f"x-ratelimit-limit-requests ({limit})")
check(
    remaining is not None and remaining.isdigit() and int(remaining) < int(limit),
    f"x-ratelimit-remaining-requests ({remaining} of {limit})",
)
check(reset.endswith("s") and reset[0].isdigit(), f"x-ratelimit-reset-requests as a duration ({reset})")
check("headers" in (raw.parse().choices[0].message.content or ""), "the raw response still parses")

# The user role has a token budget on this gateway (schemathesis.sh): the token headers, and a
# stream the upstream overruns (it ignores max_tokens), which the gateway cuts with an error
# event the SDK raises.
tlimit = raw.headers.get("x-ratelimit-limit-tokens")
tremaining = raw.headers.get("x-ratelimit-remaining-tokens")
treset = raw.headers.get("x-ratelimit-reset-tokens") or ""
check(tlimit == "1000000", f"x-ratelimit-limit-tokens ({tlimit})")
check(
    tremaining is not None and tremaining.isdigit() and int(tremaining) < int(tlimit),
    f"x-ratelimit-remaining-tokens ({tremaining} of {tlimit})",
)
check(treset.endswith("s") and treset[0].isdigit(), f"x-ratelimit-reset-tokens as a duration ({treset})")
usage_chunks = [
    c
    for c in client.chat.completions.create(
        model="echo-1", messages=[{"role": "user", "content": "no usage"}], stream=True, max_tokens=8
    )
    if getattr(c, "usage", None)
]
check(not usage_chunks, "the usage chunk the gateway asked for is not in the client's stream")
try:
    for _ in client.chat.completions.create(
        model="echo-1",
        messages=[{"role": "user", "content": "overrun"}],
        stream=True,
        max_tokens=3,
        extra_headers={"x-dev-output-tokens": "50"},
    ):
        pass
    check(False, "an overrunning stream is cut")
except openai.APIError as e:
    check("token_limit_exceeded" in str(e) or getattr(e, "code", None) == "token_limit_exceeded",
          f"the cut stream raises token_limit_exceeded ({e!r})")

print(f"openai SDK {openai.__version__}: {checks} checks passed")
