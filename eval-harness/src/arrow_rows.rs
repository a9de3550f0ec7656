//! Arrow IPC stream files (the `data-*.arrow` files of `datasets.save_to_disk`) read as JSON
//! records, so that they go through the same record conversion as JSONL.

use std::io::Read;

use arrow_array::{
    Array, BooleanArray, Float32Array, Float64Array, GenericListArray, Int8Array, Int16Array,
    Int32Array, Int64Array, LargeStringArray, OffsetSizeTrait, RecordBatch, StringArray,
    StructArray, UInt8Array, UInt16Array, UInt32Array, UInt64Array,
};
use arrow_schema::DataType;
use serde_json::{Map, Value};

use crate::error::DataError;

/// Most rows read from one stream (MMLU's largest split has 14,042).
pub const MAX_ROWS: usize = 1_000_000;

/// Reads every batch of an Arrow IPC stream into one JSON object per row.
pub fn read_stream_records(reader: impl Read, source_name: &str) -> Result<Vec<Value>, DataError> {
    let bad = |reason: String| DataError::Arrow {
        source_name: source_name.to_owned(),
        reason,
    };
    let stream =
        arrow_ipc::reader::StreamReader::try_new(reader, None).map_err(|e| bad(e.to_string()))?;
    let mut rows = Vec::new();
    for batch in stream {
        let batch = batch.map_err(|e| bad(e.to_string()))?;
        if rows.len() + batch.num_rows() > MAX_ROWS {
            return Err(DataError::TooManyRecords {
                source_name: source_name.to_owned(),
                max: MAX_ROWS,
            });
        }
        append_rows(&batch, &mut rows).map_err(bad)?;
    }
    Ok(rows)
}

fn append_rows(batch: &RecordBatch, rows: &mut Vec<Value>) -> Result<(), String> {
    let schema = batch.schema();
    for row in 0..batch.num_rows() {
        let mut obj = Map::new();
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            obj.insert(
                field.name().clone(),
                cell(column.as_ref(), row)
                    .map_err(|e| format!("column `{}`: {e}", field.name()))?,
            );
        }
        rows.push(Value::Object(obj));
    }
    Ok(())
}

fn downcast<T: 'static>(array: &dyn Array) -> Result<&T, String> {
    array
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| format!("unexpected array type {}", array.data_type()))
}

fn list_cell<O: OffsetSizeTrait>(array: &dyn Array, row: usize) -> Result<Value, String> {
    let list = downcast::<GenericListArray<O>>(array)?;
    let values = list.value(row);
    (0..values.len())
        .map(|i| cell(values.as_ref(), i))
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

/// One cell as JSON; nulls become `null`. Only the types HF datasets use for text QA.
fn cell(array: &dyn Array, row: usize) -> Result<Value, String> {
    if array.is_null(row) {
        return Ok(Value::Null);
    }
    Ok(match array.data_type() {
        DataType::Utf8 => Value::from(downcast::<StringArray>(array)?.value(row)),
        DataType::LargeUtf8 => Value::from(downcast::<LargeStringArray>(array)?.value(row)),
        DataType::Boolean => Value::from(downcast::<BooleanArray>(array)?.value(row)),
        DataType::Int8 => Value::from(downcast::<Int8Array>(array)?.value(row)),
        DataType::Int16 => Value::from(downcast::<Int16Array>(array)?.value(row)),
        DataType::Int32 => Value::from(downcast::<Int32Array>(array)?.value(row)),
        DataType::Int64 => Value::from(downcast::<Int64Array>(array)?.value(row)),
        DataType::UInt8 => Value::from(downcast::<UInt8Array>(array)?.value(row)),
        DataType::UInt16 => Value::from(downcast::<UInt16Array>(array)?.value(row)),
        DataType::UInt32 => Value::from(downcast::<UInt32Array>(array)?.value(row)),
        DataType::UInt64 => Value::from(downcast::<UInt64Array>(array)?.value(row)),
        DataType::Float32 => Value::from(f64::from(downcast::<Float32Array>(array)?.value(row))),
        DataType::Float64 => Value::from(downcast::<Float64Array>(array)?.value(row)),
        DataType::List(_) => list_cell::<i32>(array, row)?,
        DataType::LargeList(_) => list_cell::<i64>(array, row)?,
        DataType::Struct(fields) => {
            let st = downcast::<StructArray>(array)?;
            let mut obj = Map::new();
            for (field, column) in fields.iter().zip(st.columns()) {
                obj.insert(field.name().clone(), cell(column.as_ref(), row)?);
            }
            Value::Object(obj)
        }
        other => return Err(format!("unsupported type {other}")),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::builder::{ListBuilder, StringBuilder};
    use arrow_schema::{Field, Schema};

    use super::*;

    #[test]
    fn stream_with_strings_lists_and_ints_becomes_records() {
        let mut choices = ListBuilder::new(StringBuilder::new());
        choices.values().append_value("3");
        choices.values().append_value("4");
        choices.append(true);
        let choices = choices.finish();
        let schema = Arc::new(Schema::new(vec![
            Field::new("question", DataType::Utf8, false),
            Field::new("choices", choices.data_type().clone(), true),
            Field::new("answer", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["2+2?"])),
                Arc::new(choices),
                Arc::new(Int64Array::from(vec![1])),
            ],
        )
        .unwrap();
        let mut bytes = Vec::new();
        let mut writer = arrow_ipc::writer::StreamWriter::try_new(&mut bytes, &schema).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        drop(writer);
        let rows = read_stream_records(bytes.as_slice(), "t.arrow").unwrap();
        assert_eq!(
            rows,
            vec![serde_json::json!({"question": "2+2?", "choices": ["3", "4"], "answer": 1})]
        );
        let err = read_stream_records(&bytes[..bytes.len() / 2], "t.arrow").unwrap_err();
        assert!(matches!(err, DataError::Arrow { .. }), "{err}");
    }
}
