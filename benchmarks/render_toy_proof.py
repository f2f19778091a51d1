"""Render the toy proof's JSON files (benchmarks/toy_rater_styles.py) as the markdown tables of results.md.

    python benchmarks/render_toy_proof.py /tmp/toyruns/s1/toy_rater_styles.json /tmp/toyruns/s2/toy_rater_styles.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def render(results: list[dict]) -> str:
    lines = ["### Stage I against sampling steps S (mean ± standard error over the held-out cases)", "",
             "| seed | S | GED | Dice_soft | whole-mask fraction |", "|---|---:|---:|---:|---:|"]
    for r in results:
        for row in r["stage1_steps"]:
            lines.append(f"| {r['seed']}{' (tuning)' if r['tuning_seed'] else ''} | {row['S']} | "
                         f"{row['GED']:.3f} ± {row['GED_se']:.3f} | {row['Dice_soft']:.3f} ± {row['Dice_soft_se']:.3f} | "
                         f"{row['whole_mask_fraction']:.3f} |")
    lines += ["", "### Rater x prompt Dice per prompt block (rows: prompt, columns: rater labels)", ""]
    for r in results:
        raters = r["raters"]
        for block, b in r["prompt_blocks"].items():
            dominant = sum(bool(d) for d in b["row_max_on_diagonal"])
            lines += [f"Seed {r['seed']}, prompt block `{block}`: {dominant}/{len(raters)} rows diagonal-dominant, "
                      f"mean diagonal {b['mean_diagonal']:.3f} - mean off-diagonal {b['mean_off_diagonal']:.3f} = "
                      f"{b['diagonal_minus_off_diagonal']:+.3f}; strict per-rater Dice {b['strict_per_rater_dice']:.3f}", "",
                      "| prompt \\ labels | " + " | ".join(raters) + " | row margin | mean foreground px |",
                      "|---|" + "---:|" * (len(raters) + 2)]
            for k, name in enumerate(raters):
                cells = " | ".join(f"**{v:.3f}**" if j == k else f"{v:.3f}" for j, v in enumerate(b["rater_prompt_dice_matrix"][k]))
                lines.append(f"| {name} | {cells} | {b['row_margins'][k]:+.3f} | "
                             f"{b['mean_predicted_foreground_pixels'][name]:.0f} |")
            lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render([json.loads(Path(f).read_text()) for f in sys.argv[1:]]))
