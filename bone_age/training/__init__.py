"""What happens while a model learns: ``train()`` (compose -> fit -> test -> results), the
LightningModule, callbacks that add sections to the run's results, resume and SLURM/DDP
plumbing. Imported lazily by ``python -m bone_age.run``; inference never imports it."""
