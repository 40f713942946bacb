"""The sycophancy probe: a fixed set of verifiable questions (`items`), deterministic graders
(`grade`), the ask / push back / suggest protocol (`protocol`) and the judge's flattery pairs
(`pairs`). Pure: the gateway runs it against a variant (`POST /v1/probe`), `arena-serve probe`
drives it, and `router.analysis.probe` turns its logged results into figures and guardrails."""
