"""Learning curve of a training run: validation PSNR gain over bicubic against steps and against
wall time, read from its MLflow store (the metrics `srunet train` logs at each validation).

    python bench/learning_curve.py --store runs/kidney/mlflow.db [--run RUN_ID] --out curve.png

Without --run, the store's most recent run. Prints the table and writes the figure.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mlflow.tracking import MlflowClient

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True, help="the run's mlflow.db")
    parser.add_argument("--run", default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    client = MlflowClient(tracking_uri=f"sqlite:///{args.store.resolve()}")
    run_id = args.run
    if run_id is None:
        experiments = [e.experiment_id for e in client.search_experiments()]
        run_id = client.search_runs(experiments, order_by=["attributes.start_time DESC"],
                                    max_results=1)[0].info.run_id
    model = {m.step: m for m in client.get_metric_history(run_id, "val_psnr")}
    bicubic = {m.step: m.value for m in client.get_metric_history(run_id, "val_bicubic_psnr")}
    start = client.get_run(run_id).info.start_time
    steps = sorted(model)
    gains = [model[s].value - bicubic[s] for s in steps]
    minutes = [(model[s].timestamp - start) / 60000 for s in steps]
    print("step  minutes  val gain over bicubic (dB)")
    for step, minute, gain in zip(steps, minutes, gains):
        print(f"{step:5d}  {minute:7.1f}  {gain:+.2f}")
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True, layout="constrained")
    left.plot(steps, gains, marker="o")
    left.set(xlabel="optimizer steps", ylabel="validation PSNR gain over bicubic (dB)")
    right.plot(minutes, gains, marker="o")
    right.set(xlabel="wall time since the run started (min)")
    figure.suptitle(f"srunet training run {run_id[:8]}: validation images (simulated)")
    figure.savefig(args.out, dpi=100)
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
