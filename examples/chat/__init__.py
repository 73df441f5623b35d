"""The enginescope chat example: FastAPI, real WebSockets and one web page.

Run it with ``python -m examples.chat`` (or ``scripts/demo``) and open the printed URL.
"""
