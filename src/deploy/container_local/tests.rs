use super::*;

#[test]
fn container_names_are_dns_safe() {
    assert_eq!(container_name("default", "echo", 1), "nanofaas-echo-r1");
    assert_eq!(
        container_name("default", "My_Func.v2", 3),
        "nanofaas-my-func-v2-r3"
    );
    assert_eq!(container_name("ci-7", "a", 2), "nanofaas-ci-7-a-r2");
    assert_eq!(container_name("default", "__", 1), "nanofaas-fn-r1");
}
