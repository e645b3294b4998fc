"""Spark reads the lake through the table definitions `sluice ddl` generated (Hive dialect).

usage: spark_reads.py [HIVE_DDL_FILE LOG_TABLE ODS_TABLE VALUE_COLUMN]...
prints, per group: <ods rows> <ods sum of VALUE_COLUMN> <change-log deletes> <change-log rows>
"""
import os
import sys
import tempfile

from pyspark.sql import SparkSession

args = sys.argv[1:]
groups = [args[i:i + 4] for i in range(0, len(args), 4)]
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
for ddl_file, log_table, ods_table, column in groups:
    for statement in open(ddl_file).read().split(";"):
        lines = [l for l in statement.strip().splitlines() if not l.strip().startswith("--")]
        if lines:
            spark.sql("\n".join(lines))
    ods = spark.sql(f"SELECT count(*) AS n, sum({column}) AS s FROM {ods_table}").collect()[0]
    deletes = spark.sql(f"SELECT count(*) FROM {log_table} WHERE _op = 'd'").collect()[0][0]
    rows = spark.sql(f"SELECT count(*) FROM {log_table}").collect()[0][0]
    print(ods["n"], ods["s"], deletes, rows)
spark.stop()
