"""The Triton side of serving: the model repository builder (`repository`), its config templates and the
Python-backend models tritonserver runs (`models`). The launcher with the recipe that runs nvidia-pytriton's
tritonserver from a plain virtual environment is `mmserve.serving.server`."""
