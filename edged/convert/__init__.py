"""Model conversion: a Llama-family GGUF into an ONNX model directory for the ONNX engine."""
