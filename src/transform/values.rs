//! Between sluice's typed rows and Arrow arrays: the transform evaluates on Arrow record batches
//! and hands rows back to the sink (and, in Kafka mode, to the Debezium encoders).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, new_null_array};
use arrow::compute::{can_cast_types, cast};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, DurationMicrosecondType, Field, Float32Type, Float64Type,
    Int16Type, Int32Type, Int64Type, Schema, SchemaRef, Time64MicrosecondType,
    TimestampMicrosecondType,
};
use arrow::error::ArrowError;

use crate::event::{ColumnType, Row, TableSchema, Value};
use crate::lake::parquet::{arrow_type, column_array};

/// The Arrow schema of a table's own columns, as transforms see them.
pub(crate) fn row_schema(table: &TableSchema) -> SchemaRef {
    Arc::new(Schema::new(
        table
            .columns
            .iter()
            .map(|c| Field::new(&c.name, arrow_type(&c.ty), true))
            .collect::<Vec<_>>(),
    ))
}

/// A record batch of rows (each as long as the table has columns; missing values are null).
/// Columns whose `reads` flag is false are left all null: nothing reads them.
pub(crate) fn rows_to_batch(
    schema: &SchemaRef,
    table: &TableSchema,
    rows: &[&Row],
    reads: &[bool],
) -> Result<RecordBatch, ArrowError> {
    let columns = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, col)| {
            if !reads.get(i).copied().unwrap_or(true) {
                return Ok(new_null_array(&arrow_type(&col.ty), rows.len()));
            }
            let values = rows.iter().map(|r| r.get(i).unwrap_or(&Value::Null));
            column_array(&col.ty, values, rows.len())
                .map_err(|e| ArrowError::ComputeError(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(rows.len())),
    )
}

/// The column type a computed Arrow type is stored as, or `None` when the lake cannot store it
/// (structs, maps, unions: the SQL must convert them, e.g. with `json_get_str`).
pub(crate) fn column_type_of(dt: &DataType) -> Option<ColumnType> {
    Some(match dt {
        DataType::Boolean => ColumnType::Bool,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => ColumnType::Int16,
        DataType::Int32 | DataType::UInt16 => ColumnType::Int32,
        DataType::Int64 | DataType::UInt32 => ColumnType::Int64,
        DataType::UInt64 => ColumnType::Decimal {
            precision: 20,
            scale: 0,
        },
        DataType::Float16 | DataType::Float32 => ColumnType::Float32,
        DataType::Float64 => ColumnType::Float64,
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) | DataType::Decimal128(p, s) => {
            ColumnType::Decimal {
                precision: *p,
                scale: *s,
            }
        }
        DataType::Decimal256(..) => ColumnType::Numeric,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ColumnType::Text,
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => ColumnType::Bytes,
        DataType::Date32 | DataType::Date64 => ColumnType::Date,
        DataType::Time32(_) | DataType::Time64(_) => ColumnType::Time,
        DataType::Duration(_) => ColumnType::Duration,
        DataType::Timestamp(_, None) => ColumnType::Timestamp,
        DataType::Timestamp(_, Some(_)) => ColumnType::TimestampTz,
        DataType::List(f) | DataType::LargeList(f) | DataType::ListView(f) => {
            ColumnType::List(Box::new(column_type_of(f.data_type())?))
        }
        DataType::Null => ColumnType::Text,
        other if can_cast_types(other, &DataType::Utf8) => ColumnType::Text,
        _ => return None,
    })
}

/// Values of one output array as the column type says, one per row.
pub(crate) fn array_values(array: &ArrayRef, ty: &ColumnType) -> Result<Vec<Value>, ArrowError> {
    let mut values = Vec::with_capacity(array.len());
    for_each_value(array, ty, |v| values.push(v))?;
    Ok(values)
}

/// Hand every value of an output array, as the column type says, to `f` in row order. The
/// array is downcast once for the whole column, not once per value: this is the transform's
/// inner loop.
pub(crate) fn for_each_value(
    array: &ArrayRef,
    ty: &ColumnType,
    mut f: impl FnMut(Value),
) -> Result<(), ArrowError> {
    let target = arrow_type(ty);
    let array = if array.data_type() == &target {
        array.clone()
    } else {
        cast(array, &target)?
    };
    macro_rules! each {
        ($typed:expr, |$x:ident| $value:expr) => {{
            let typed = $typed;
            for i in 0..typed.len() {
                if typed.is_null(i) {
                    f(Value::Null);
                } else {
                    let $x = typed.value(i);
                    f($value);
                }
            }
        }};
    }
    match ty {
        ColumnType::Bool => each!(array.as_boolean(), |x| Value::Bool(x)),
        ColumnType::Int16 => each!(array.as_primitive::<Int16Type>(), |x| Value::Int(x.into())),
        ColumnType::Int32 => each!(array.as_primitive::<Int32Type>(), |x| Value::Int(x.into())),
        ColumnType::Int64 => each!(array.as_primitive::<Int64Type>(), |x| Value::Int(x)),
        ColumnType::Float32 => {
            each!(array.as_primitive::<Float32Type>(), |x| Value::Float(
                x.into()
            ))
        }
        ColumnType::Float64 => each!(array.as_primitive::<Float64Type>(), |x| Value::Float(x)),
        ColumnType::Decimal { .. } => {
            each!(array.as_primitive::<Decimal128Type>(), |x| Value::Decimal(
                x
            ))
        }
        ColumnType::Text
        | ColumnType::Json
        | ColumnType::Uuid
        | ColumnType::Numeric
        | ColumnType::TimeTz
        | ColumnType::Interval
        | ColumnType::Other(_) => each!(array.as_string::<i32>(), |x| Value::Text(x.to_string())),
        ColumnType::Bytes => each!(array.as_binary::<i32>(), |x| Value::Bytes(x.to_vec())),
        ColumnType::Date => each!(array.as_primitive::<Date32Type>(), |x| Value::Temporal(
            x.into()
        )),
        ColumnType::Time => {
            each!(array.as_primitive::<Time64MicrosecondType>(), |x| {
                Value::Temporal(x)
            })
        }
        ColumnType::Duration => {
            each!(array.as_primitive::<DurationMicrosecondType>(), |x| {
                Value::Temporal(x)
            })
        }
        ColumnType::Timestamp | ColumnType::TimestampTz => {
            each!(array.as_primitive::<TimestampMicrosecondType>(), |x| {
                Value::Temporal(x)
            })
        }
        // Through the non-generic `array_values`: recursing into `for_each_value` itself would
        // instantiate it with an ever-deeper closure type.
        ColumnType::List(elem) => each!(array.as_list::<i32>(), |items| Value::List(array_values(
            &items, elem
        )?)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Column, SourceInfo, TableId};
    use arrow::datatypes::TimeUnit;

    fn table(columns: Vec<(&str, ColumnType)>) -> TableSchema {
        TableSchema::new(
            TableId {
                source: "s".into(),
                namespace: "p".into(),
                table: "t".into(),
            },
            columns
                .into_iter()
                .map(|(n, ty)| Column {
                    name: n.into(),
                    ty,
                    nullable: true,
                    key: false,
                    source_type: String::new(),
                })
                .collect(),
            1,
            SourceInfo {
                connector: "postgresql",
                db: "d".into(),
                documents: false,
            },
        )
    }

    #[test]
    fn rows_round_trip_through_arrow() {
        let types = vec![
            ("b", ColumnType::Bool),
            ("i", ColumnType::Int32),
            (
                "d",
                ColumnType::Decimal {
                    precision: 12,
                    scale: 2,
                },
            ),
            ("t", ColumnType::Text),
            ("ts", ColumnType::TimestampTz),
            ("l", ColumnType::List(Box::new(ColumnType::Int64))),
        ];
        let t = table(types.clone());
        let rows = [
            vec![
                Value::Bool(true),
                Value::Int(-7),
                Value::Decimal(12345),
                Value::Text("x".into()),
                Value::Temporal(1_700_000_000_123_456),
                Value::List(vec![Value::Int(1), Value::Null]),
            ],
            vec![Value::Null; 6],
        ];
        let refs: Vec<&Row> = rows.iter().collect();
        let batch = rows_to_batch(&row_schema(&t), &t, &refs, &[true; 6]).unwrap();
        for (c, (_, ty)) in types.iter().enumerate() {
            let values = array_values(batch.column(c), ty).unwrap();
            assert_eq!(
                values,
                vec![rows[0][c].clone(), rows[1][c].clone()],
                "{ty:?}"
            );
        }
    }

    #[test]
    fn computed_types_map_to_column_types() {
        assert_eq!(column_type_of(&DataType::Utf8View), Some(ColumnType::Text));
        assert_eq!(column_type_of(&DataType::Int8), Some(ColumnType::Int16));
        assert_eq!(
            column_type_of(&DataType::Timestamp(
                TimeUnit::Nanosecond,
                Some("+00:00".into())
            )),
            Some(ColumnType::TimestampTz)
        );
        // A nanosecond timestamp is stored in microseconds.
        let ns: ArrayRef = Arc::new(
            arrow::array::TimestampNanosecondArray::from(vec![1_000_000_001_000i64])
                .with_timezone("UTC"),
        );
        assert_eq!(
            array_values(&ns, &ColumnType::TimestampTz).unwrap(),
            vec![Value::Temporal(1_000_000_001)]
        );
    }
}
