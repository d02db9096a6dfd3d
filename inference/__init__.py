"""Juice inference: chat completions, from OpenAI's request shape to the decoded tokens.

`juice inference` (server.py) is a process of its own, apart from the API (which stays torch-free) and
from the Celery workers (a request never competes with a training step); docs/decisions.md says why.

    schemas.py    OpenAI's chat completions request and response models: the API validates a request
                  with them before it forwards it, the server parses the same model and answers with them
    streaming.py  ClosingStreamingResponse and SSE_HEADERS: the SSE responses of the server and of the
                  API's relay (api/routes/chat.py)
    decoding.py   ChatModel, Sampling, Piece: the torch decoding loop, one forward pass per token
    server.py     the FastAPI app of `juice inference`: model cache, decoding thread, OpenAI's endpoint

Import rules (so each side loads only what it runs):
  - schemas.py and streaming.py are pure pydantic/starlette, no torch: the API may import them, and
    only them (api/routes/chat.py, api/services/chat.py, which decides which weights a model name
    means for a tenant and forwards the request).
  - decoding.py imports torch and trainer/ (the tokenizer and EOS helpers); trainer/ never imports
    from here.
  - server.py imports no Celery (nothing from worker/) and of api/ only the settings, the inference
    token, the artifact store, the error types and `resolve_model`; never a route, api.deps, api.main
    or the dashboard.
  - This file imports nothing, so `import inference.schemas` loads no torch.
"""
