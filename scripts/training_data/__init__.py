"""evaluate_and_balance: evaluate and rebalance per-actor LoRA training sets, resumably."""
