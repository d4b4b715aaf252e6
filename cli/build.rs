// Whether the etcd test can run: see ../integration-tests/etcd_probe.rs.
include!("../integration-tests/etcd_probe.rs");
