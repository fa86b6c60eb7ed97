"""Folder listed in ``nnUNet_extTrainer``; nnU-Net imports the module in it by its bare name."""
