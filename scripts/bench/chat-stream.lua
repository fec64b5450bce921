-- wrk script for `make bench`'s token-limiting figure: a streamed POST /v1/chat/completions
-- (SSE) with a small prompt; the credential comes from wrk's -H option.
wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.body = '{"model": "echo-1", "stream": true, "messages": [{"role": "user", "content": "stream a short answer for the infergate load test"}], "max_tokens": 64}'
wrk.headers["Content-Type"] = "application/json"
