"""`ryzanstein serve`: an OpenAI-compatible HTTP API over one loaded engine (FastAPI + uvicorn).

    ryzanstein serve --model smollm2-135m --draft ngram --port 8000 [--api-key KEY]

Endpoints: GET /v1/models, POST /v1/completions (raw prompt), POST /v1/chat/completions (the model's chat
template), each streaming (server-sent events, `data: [DONE]` last) or not; GET /metrics (Prometheus text,
metrics.py), GET /health. Speculation per request through an extra body field
`"speculative": {"k": "auto" | int, "policy": ..., "draft": "none"}`, defaulting to the server's; each
response carries its speculative figures in a non-standard "ryzanstein" field. Requests wait for the one
engine in a bounded FIFO queue (worker.py). Every error is an OpenAI-style JSON body
`{"error": {"message", "type", "param", "code"}}`, never a traceback.

config.py holds ServerConfig; openai_api.py maps requests to GenerationConfigs and results to response bodies
(pure functions, no web framework); guard.py is the outermost ASGI layer (API key, body size, request
counter); app.py wires the routes. fastapi, uvicorn and prometheus-client are the optional `server` extra:
only app.py, guard.py, metrics.py and the cluster modules import them. cluster.py (with affinity.py,
replica_pool.py and cluster_local.py) puts many engine replicas behind the same app on Ray Serve: those are the
only modules that import Ray (the `cluster` extra).
"""
