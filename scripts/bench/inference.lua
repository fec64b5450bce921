-- wrk script for `make bench`: POST /inference with a small JSON prompt.
-- The X-API-Key header comes from wrk's -H option, which this script keeps.
wrk.method = "POST"
wrk.path = "/inference"
wrk.body = '{"prompt": "hello from wrk, the infergate load test"}'
wrk.headers["Content-Type"] = "application/json"
