"""Training: the s3VDC schedule, the trainer, and the distributed backends."""
