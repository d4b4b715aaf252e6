// Whether the etcd tests can run: see etcd_probe.rs.
include!("etcd_probe.rs");
