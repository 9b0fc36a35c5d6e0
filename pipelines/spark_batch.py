"""Batch recommendation on Spark: the registered pyfunc model scored through
`mlflow.pyfunc.spark_udf`, so the job scales out on an existing cluster (extra `[spark]`)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd

from pipelines.tracking import tracking_uri
from recsys.errors import RecsysError


def spark_session(app_name: str = "recsys-batch"):
    """The active Spark session, or a local one (all cores of this machine)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise RecsysError("Spark batch scoring needs the [spark] extra: "
                          "pip install 'recsys[spark]'") from None
    return SparkSession.builder.appName(app_name).master("local[*]").getOrCreate()


def recommend_spark(spark, model_uri: str, users, k: int, *, filter_seen: bool = True):
    """Spark DataFrame user_id, item_id, score, rank, fallback for a DataFrame of `user_id`s.

    `model_uri` names an exported pyfunc model (models:/NAME@ALIAS, models:/NAME/VERSION).
    Each user becomes one UDF row holding its k items and scores, exploded into ranked rows.
    """
    from pyspark.sql import functions as F

    if k <= 0:
        raise RecsysError(f"k must be positive, got {k}")
    mlflow.set_tracking_uri(tracking_uri())
    outputs = mlflow.models.get_model_info(model_uri).signature.outputs  # reads MLmodel only
    item_type = "bigint" if outputs.input_dict()["item_id"].type.name == "long" else "string"
    udf = mlflow.pyfunc.spark_udf(
        spark, model_uri, env_manager="local",
        result_type=f"item_ids array<{item_type}>, scores array<float>, fallback boolean",
        params={"k": k, "filter_seen": filter_seen, "output": "lists"})
    ranked = users.select("user_id", udf(F.struct("user_id")).alias("r"))
    exploded = ranked.select("user_id", "r.fallback",
                             F.posexplode(F.arrays_zip("r.item_ids", "r.scores")).alias("pos", "pair"))
    return exploded.select("user_id", F.col("pair.item_ids").alias("item_id"),
                           F.col("pair.scores").alias("score"),
                           (F.col("pos") + 1).cast("int").alias("rank"), "fallback")


def recommend_spark_to_parquet(model_uri: str, user_ids, k: int, out: str | Path, *,
                               filter_seen: bool = True) -> int:
    """Score `user_ids` on a local Spark session and write a Parquet folder; returns rows."""
    spark = spark_session()
    users = spark.createDataFrame(pd.DataFrame({"user_id": list(user_ids)}))
    recs = recommend_spark(spark, model_uri, users, k, filter_seen=filter_seen)
    recs.write.mode("overwrite").parquet(str(out))
    return spark.read.parquet(str(out)).count()
