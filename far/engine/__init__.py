"""Fine-tuning engine: run config, distributed/DeepSpeed set-up, optimiser recipe,
resumable training checkpoints, MLflow tracking, ``far train`` and ``far test``.

Modules are imported lazily by their users (torch, deepspeed and mlflow are heavy);
this package's ``__init__`` deliberately imports nothing.
"""
