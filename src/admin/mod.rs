//! The admin side (HTTP API and web UI). It observes pipeline state through
//! `pipeline::status` and will send commands to the pipelines; it never writes data itself.
//! The API arrives with its own issue; today this module only holds that contract.
