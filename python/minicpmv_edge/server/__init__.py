"""`minicpmv-edge serve`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) and a chat page, over MiniCPMV.

body.py bounds a request body's JSON before parsing it and request.py reads it as a chat completion; slots.py holds
the conversation slots (one llama.cpp context each, one model, encoder and embedding cache shared) and the bounded
queue; answer.py turns a chat stream into OpenAI's responses and SSE chunks; app.py routes; guard.py decides which
Host and Origin are answered; protocol.py gives uvicorn a deadline for request headers. The command line is in
cli/serve.py, apart.
"""
