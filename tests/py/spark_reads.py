"""Spark reads the lake through the table definitions `sluice ddl` generated (Hive dialect).

usage: spark_reads.py HIVE_DDL_FILE RAW_TABLE ODS_TABLE
prints: <ods rows> <ods sum of v> <raw deletes>
"""
import os
import sys
import tempfile

from pyspark.sql import SparkSession

ddl_file, raw_table, ods_table = sys.argv[1:4]
work = tempfile.mkdtemp(prefix="sluice-spark-")
os.chdir(work)  # the embedded Derby metastore lives here
spark = (
    SparkSession.builder.master("local[1]")
    .appName("sluice-lake-check")
    .config("spark.sql.warehouse.dir", os.path.join(work, "warehouse"))
    .config("spark.ui.enabled", "false")
    .config("spark.driver.host", "127.0.0.1")
    .config("spark.sql.parquet.mergeSchema", "true")
    .enableHiveSupport()
    .getOrCreate()
)
spark.sparkContext.setLogLevel("ERROR")
for statement in open(ddl_file).read().split(";"):
    lines = [l for l in statement.strip().splitlines() if not l.strip().startswith("--")]
    if lines:
        spark.sql("\n".join(lines))
ods = spark.sql(f"SELECT count(*) AS n, sum(v) AS s FROM {ods_table}").collect()[0]
deletes = spark.sql(f"SELECT count(*) FROM {raw_table} WHERE _op = 'd'").collect()[0][0]
print(ods["n"], ods["s"], deletes)
spark.stop()
