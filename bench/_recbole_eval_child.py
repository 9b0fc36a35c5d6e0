"""RecBole's side of bench/recbole_eval.py, run by a python that has RecBole (not recsys).

    python _recbole_eval_child.py DATA_PATH DATASET FACTORS.npz BATCHES REPEATS

Loads the pre-split atomic files DATASET.{train,valid,test}.inter, builds a BPR model whose
embeddings are the given factors (rows matched through RecBole's id remapping), and times
`Trainer.evaluate` on the test split with full-sort evaluation (NDCG@20, Recall@20) for each
eval_batch_size in BATCHES (comma-separated). Prints one JSON line.
"""

import json
import logging
import sys
import time

import numpy as np
import torch


def main() -> None:
    data_path, dataset, factors_file, batches, repeats = sys.argv[1:6]
    torch.set_num_threads(1)
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.general_recommender import BPR
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    factors = np.load(factors_file, allow_pickle=False)
    results = []
    for batch in map(int, batches.split(",")):
        config = Config(model="BPR", dataset=dataset, config_dict={
            "data_path": data_path, "benchmark_filename": ["train", "valid", "test"],
            "load_col": {"inter": ["user_id", "item_id"]}, "embedding_size": factors["users"].shape[1],
            "eval_args": {"mode": "full", "group_by": "user", "order": "RO"},
            "metrics": ["NDCG", "Recall"], "topk": [20], "valid_metric": "NDCG@20",
            "eval_batch_size": batch, "gpu_id": "", "use_gpu": False, "seed": 0,
            "reproducibility": True, "show_progress": False, "state": "ERROR",
            "checkpoint_dir": "/tmp/recbole_saved"})
        init_seed(config["seed"], config["reproducibility"])
        logging.getLogger().setLevel(logging.ERROR)
        data = create_dataset(config)
        train, _, test = data_preparation(config, data)
        model = BPR(config, train.dataset)
        with torch.no_grad():
            for table, ids, rows, field in (
                    (model.user_embedding, "user_ids", "users", "user_id"),
                    (model.item_embedding, "item_ids", "items", "item_id")):
                row_of = {str(v): i for i, v in enumerate(factors[ids])}
                tokens = data.field2id_token[field][1:]  # 0 is RecBole's padding id
                table.weight[1:] = torch.from_numpy(factors[rows][[row_of[t] for t in tokens]])
        trainer = Trainer(config, model)
        times, metrics = [], None
        for _ in range(int(repeats)):
            start = time.perf_counter()
            metrics = trainer.evaluate(test, load_best_model=False, show_progress=False)
            times.append(time.perf_counter() - start)
        results.append({"eval_batch_size": batch, "seconds": float(min(times)),
                        "users_per_batch": int(getattr(test, "step", 0)),
                        **{k: float(v) for k, v in metrics.items()}})
    import recbole

    print(json.dumps({"recbole": recbole.__version__, "torch": torch.__version__,
                      "results": results}))


if __name__ == "__main__":
    main()
