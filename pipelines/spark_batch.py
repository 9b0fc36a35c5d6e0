"""Batch recommendation on Spark: the registered pyfunc model scored through
`mlflow.pyfunc.spark_udf`, so the job scales out on an existing cluster (extra `[spark]`)."""

from __future__ import annotations

from pathlib import Path

import mlflow

from recsys.errors import RecsysError
from recsys.store import tracking_uri


def spark_session(app_name: str = "recsys-batch"):
    """The active Spark session, or a local one (all cores of this machine)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise RecsysError("Spark batch scoring needs the [spark] extra: "
                          "pip install 'recsys[spark]'") from None
    return SparkSession.builder.appName(app_name).master("local[*]").getOrCreate()


def recommend_spark(spark, model_uri: str, users, k: int, *, filter_seen: bool = True,
                    grade: str | None = None):
    """Spark DataFrame user_id, item_id, score, rank, fallback, folded_in for a DataFrame of
    `user_id`s (and optionally `history`, an array of item ids per user); `grade` ranks a
    graded model by that level.

    `model_uri` names an exported pyfunc model (models:/NAME@ALIAS, models:/NAME/VERSION).
    Each user becomes one UDF row holding its k items and scores, exploded into ranked rows.
    """
    from pyspark.sql import functions as F

    if k <= 0:
        raise RecsysError(f"k must be positive, got {k}")
    item_type = SPARK_TYPES[id_types(model_uri)["item_id"]]
    udf = mlflow.pyfunc.spark_udf(
        spark, model_uri, env_manager="local",
        result_type=f"item_ids array<{item_type}>, scores array<float>, fallback boolean, "
                    "folded_in boolean",
        params={"k": k, "filter_seen": filter_seen, "output": "lists",
                **({"grade": str(grade)} if grade is not None else {})})
    inputs = [c for c in ("user_id", "history") if c in users.columns]
    ranked = users.select("user_id", udf(F.struct(*inputs)).alias("r"))
    exploded = ranked.select("user_id", "r.fallback", "r.folded_in",
                             F.posexplode(F.arrays_zip("r.item_ids", "r.scores")).alias("pos", "pair"))
    return exploded.select("user_id", F.col("pair.item_ids").alias("item_id"),
                           F.col("pair.scores").alias("score"),
                           (F.col("pos") + 1).cast("int").alias("rank"), "fallback", "folded_in")


SPARK_TYPES = {"long": "bigint", "string": "string"}


def id_types(model_uri: str) -> dict[str, str]:
    """The signature types ("long" or "string") of the model's user and item ids (reads the
    MLmodel file only)."""
    mlflow.set_tracking_uri(tracking_uri())
    outputs = mlflow.models.get_model_info(model_uri).signature.outputs.input_dict()
    return {name: outputs[name].type.name for name in ("user_id", "item_id")}


def recommend_spark_to_parquet(model_uri: str, user_ids, k: int, out: str | Path, *,
                               histories: list | None = None, filter_seen: bool = True,
                               grade: str | None = None) -> int:
    """Score `user_ids` (in the model's id type; with `histories`, one item-id list or None per
    user) on a local Spark session and write a Parquet folder; returns rows."""
    spark = spark_session()
    types = id_types(model_uri)
    schema = f"user_id {SPARK_TYPES[types['user_id']]}"
    rows: list = [(u,) for u in user_ids]
    if histories is not None:
        schema += f", history array<{SPARK_TYPES[types['item_id']]}>"
        rows = list(zip(user_ids, histories, strict=True))
    users = spark.createDataFrame(rows, schema)
    recs = recommend_spark(spark, model_uri, users, k, filter_seen=filter_seen, grade=grade)
    recs.write.mode("overwrite").parquet(str(out))
    return spark.read.parquet(str(out)).count()
