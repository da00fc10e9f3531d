"""GPU benchmarks of the fine-tuning step (`far bench`)."""
