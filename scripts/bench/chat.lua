-- wrk script for `make bench`: POST /v1/chat/completions with a small JSON body, from a browser
-- origin the gateway allows (so CORS runs on every request). The credential comes from wrk's -H
-- option, which this script keeps.
wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.body = '{"model": "dev-model", "messages": [{"role": "user", "content": "hello from wrk, the infergate load test"}], "max_tokens": 16}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Origin"] = "https://app.bench.example"
