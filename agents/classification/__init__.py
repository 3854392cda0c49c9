"""The classification agent: pre-processing, inference on ONNX Runtime or RedisAI, model versions."""
