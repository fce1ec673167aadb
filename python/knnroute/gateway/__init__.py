"""The OpenAI-compatible gateway (``knnroute gateway``): routes chat completions to upstream models and
learns from outcome feedback. Modules: config (TOML), upstream (forwarding, retries), decisions (decision
log, routed text), sessions (affinity), feedback (durable log, live rows, saves), auth, app, serve.

FastAPI, uvicorn and httpx are imported by the submodules that need them, not here.
"""
