//! Protobuf support shared by vrata's crates: descriptors of Envoy's API, used to render Envoy
//! resources as proto3 JSON/YAML (the form `envoy -c` and `xds-server render` use), and later
//! vrata's own `.proto` definitions. Holds no business logic.
