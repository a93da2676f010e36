//! batch/v1 kinds.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::*;

pub(super) fn lookup(group: &str, kind: &str) -> Option<Printer> {
    let p = |columns, cells| Some(Printer { columns, cells });
    match (group, kind) {
        ("batch", "Job") => p(job_columns, job_cells),
        ("batch", "CronJob") => p(cronjob_columns, cronjob_cells),
        _ => None,
    }
}

fn job_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Status", "string", "Status of the job."),
        col(
            "Completions",
            "string",
            "The number of pods which reached phase Succeeded.",
        ),
        col("Duration", "string", "Time required to complete the job."),
        age_col(),
        wide("Containers", "string", CONTAINERS_DESC),
        wide("Images", "string", IMAGES_DESC),
        wide(
            "Selector",
            "string",
            "A label query over pods that should match the pod count.",
        ),
    ]
}

/// `hasJobCondition`: the first condition of the type decides.
fn has_condition(job: &Value, type_: &str) -> bool {
    arr_at(job, "status.conditions")
        .iter()
        .find(|c| str_at(c, "type") == type_)
        .is_some_and(|c| str_at(c, "status") == "True")
}

/// The job STATUS column.
pub(crate) fn job_status(job: &Value) -> &'static str {
    if has_condition(job, "Complete") {
        "Complete"
    } else if has_condition(job, "Failed") {
        "Failed"
    } else if present(job, "metadata.deletionTimestamp") {
        "Terminating"
    } else if has_condition(job, "Suspended") {
        "Suspended"
    } else if has_condition(job, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    }
}

/// The COMPLETIONS column: `succeeded/completions`, or `/1 of parallelism`.
pub(crate) fn job_completions(job: &Value) -> String {
    let succeeded = int_at(job, "status.succeeded");
    match opt_int(at(job, "spec.completions")) {
        Some(c) => format!("{succeeded}/{c}"),
        None => {
            let parallelism = opt_int(at(job, "spec.parallelism")).unwrap_or(0);
            if parallelism > 1 {
                format!("{succeeded}/1 of {parallelism}")
            } else {
                format!("{succeeded}/1")
            }
        }
    }
}

/// The DURATION column: empty before start, running time, or start..completion.
pub(crate) fn job_duration(job: &Value, now: DateTime<Utc>) -> String {
    let Some(start) = parse_time(str_at(job, "status.startTime")) else {
        return String::new();
    };
    match parse_time(str_at(job, "status.completionTime")) {
        Some(done) => human_duration(done - start),
        None => human_duration(now - start),
    }
}

fn job_cells(job: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = container_cells(arr_at(job, "spec.template.spec.containers"));
    vec![
        name_cell(job),
        s(job_status(job)),
        s(job_completions(job)),
        s(job_duration(job, now)),
        s(obj_age(job, now)),
        names,
        images,
        s(format_label_selector(at(job, "spec.selector"))),
    ]
}

fn cronjob_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Schedule", "string", "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron."),
        col("Timezone", "string", "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones."),
        col("Suspend", "boolean", "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions."),
        col("Active", "integer", "A list of pointers to currently running jobs."),
        col("Last Schedule", "string", "Information when was the last time the job was successfully scheduled."),
        age_col(),
        wide("Containers", "string", CONTAINERS_DESC),
        wide("Images", "string", IMAGES_DESC),
        wide("Selector", "string", "A label query over pods that should match the pod count."),
    ]
}

fn cronjob_cells(cj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let last = at(cj, "status.lastScheduleTime");
    let last = if last.is_null() {
        "<none>".to_string()
    } else {
        since(last, now)
    };
    let tz = at(cj, "spec.timeZone").as_str().unwrap_or("<none>");
    let (names, images) =
        container_cells(arr_at(cj, "spec.jobTemplate.spec.template.spec.containers"));
    vec![
        name_cell(cj),
        s(str_at(cj, "spec.schedule")),
        s(tz),
        s(bool_ptr(at(cj, "spec.suspend"))),
        n(arr_at(cj, "status.active").len() as i64),
        s(last),
        s(obj_age(cj, now)),
        names,
        images,
        s(format_label_selector(at(
            cj,
            "spec.jobTemplate.spec.selector",
        ))),
    ]
}
