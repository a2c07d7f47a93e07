-- Interactions by the second, kept by the writer in the same transaction as the event rows and
-- counting only rows actually inserted: replays and retried batches never count twice.
CREATE TABLE interactions_per_second (
    second      timestamptz NOT NULL,
    campaign_id text        NOT NULL,
    kind        text        NOT NULL,
    is_machine  boolean     NOT NULL,
    events      bigint      NOT NULL,
    -- The largest receipt-to-commit delay of the rows counted here, in milliseconds.
    max_lag_ms  integer     NOT NULL,
    PRIMARY KEY (second, campaign_id, kind, is_machine)
);
CREATE INDEX interactions_per_second_campaign_idx ON interactions_per_second (campaign_id, second);

-- Rows PostgreSQL refused (a poison row must not block its batch forever). Kept with the error
-- for a person to look at; `row_repr` is the row as the writer built it.
CREATE TABLE events_dead_letter (
    id          uuid,
    occurred_at timestamptz,
    failed_at   timestamptz NOT NULL DEFAULT now(),
    error       text        NOT NULL,
    row_repr    text        NOT NULL
);
