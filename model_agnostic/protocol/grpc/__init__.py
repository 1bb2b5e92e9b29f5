"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService``.

* ``inference.proto``: the service and its messages, wire-compatible with Triton's
  ``grpc_service.proto`` and KServe's ``grpc_predict_v2.proto`` (README.md here says how
  ``inference_pb2.py`` was generated from it).
* :mod:`.convert`: messages <-> numpy arrays, both directions, validated like the HTTP
  codec; no I/O.

Importing this package imports neither grpc nor protobuf; :func:`.convert.messages` loads
the generated module on first use.
"""
