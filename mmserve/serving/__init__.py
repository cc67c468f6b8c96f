"""`mmserve serve`: the supervisor (`supervisor`, `health`), the nginx front door (`frontdoor`), the
tritonserver launcher (`server`) and the Triton model repository (`triton`)."""
