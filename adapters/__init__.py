"""LoRA adapters for adapter variants: what an adapter folder must hold to be served on a variant's
engine (`adapters.folder`), and the offline recipe that trains a small one in a detectable style
(`adapters.style`)."""
