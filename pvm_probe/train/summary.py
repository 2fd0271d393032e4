"""What `train-pvm` prints at the end: where the adapter went, its alphas per layer, the final loss (and eval
loss, or rewards), and, plainly, when the gates did not move."""

from __future__ import annotations

ALPHA_TOLERANCE = 1e-3


def summary(result) -> str:
    p, final = result.provenance, result.provenance["result"]
    lines = [f"wrote adapter to {result.out} (Stage {result.stage}, {p['trainable_parameters']:,} trainable "
             f"parameters, {p['train_seconds']:.1f} s)"]
    lines.append("alpha by layer: " + ", ".join(
        f"{layer}: {value:.4g} (from {result.alphas_before[layer]:.4g})" for layer, value in result.alphas.items()))
    if "final_loss" in final:
        lines.append(f"final loss {final['final_loss']:.4f} (step {final['final_loss_step']})"
                     + (f", eval loss {final['final_eval_loss']:.4f}" if "final_eval_loss" in final else ""))
    if "final_reward" in final:
        rewards = [e for e in result.log if "reward" in e]
        start = f"{rewards[0]['reward']:.4f} at step {rewards[0].get('step')}, " if len(rewards) > 1 else ""
        lines.append(f"reward (weighted total) {start}{final['final_reward']:.4f} at step "
                     f"{final['final_reward_step']}; " + _reward_means(result.log))
    if p.get("prompt_only_records"):
        lines.append(f"{p['prompt_only_records']} record(s) had a prompt of --max-length tokens or more and "
                     "added nothing to the loss")
    lines.extend(_still_gates(result))
    return "\n".join(lines)


def _reward_means(log: list[dict]) -> str:
    last = next((e for e in reversed(log) if "reward" in e), {})
    means = {k.split("/")[1]: v for k, v in last.items() if k.startswith("rewards/") and k.endswith("/mean")}
    return "last means: " + ", ".join(f"{name} {value:.4f}" for name, value in means.items())


def _still_gates(result) -> list[str]:
    moved = max(abs(result.alphas[layer] - result.alphas_before[layer]) for layer in result.alphas)
    if moved >= ALPHA_TOLERANCE:
        return []
    if all(value == 0 for value in result.alphas_before.values()):
        effect = "with its gates at ~0 the adapter behaves like the base model"
    else:
        effect = "the gates are where they started"
    return [f"NOTE: alpha moved less than {ALPHA_TOLERANCE:g} from its initial value in every layer (at most "
            f"{moved:.2g}): {effect}. Train longer, raise --lr, or check --warmup."]
