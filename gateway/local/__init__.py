"""Local tools: a real Triton from the nvidia-pytriton wheel (`triton`), gateway and Triton
processes for scripts and tests (`processes`), the demo and its rollout, sample inputs."""
