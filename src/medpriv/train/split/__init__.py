"""Split learning: the client keeps the first layers (and, U-shaped, the head and the labels), a
server runs the middle; one protocol over an in-process or a gRPC transport."""
