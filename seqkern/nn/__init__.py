"""Drop-in replacements for torch.nn recurrent and max-pool modules."""
