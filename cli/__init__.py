"""The click front end of srp-onnx (installed as the package ``srp_onnx_cli``)."""
