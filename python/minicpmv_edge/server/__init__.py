"""`minicpmv-edge serve`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) and a chat page, over MiniCPMV.

request.py reads a chat-completions body; slots.py holds the conversation slots (one llama.cpp context each, one
model, encoder and embedding cache shared) and the bounded queue; answer.py turns a chat stream into OpenAI's
responses and SSE chunks; app.py routes. The command line is in serve_cmd.py, apart.
"""
