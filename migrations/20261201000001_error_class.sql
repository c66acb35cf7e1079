-- Whether the recorded error can heal by retrying (`transient`) or not (`definite`).
ALTER TABLE target_state ADD COLUMN error_class TEXT;
