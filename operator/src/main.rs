fn main() {
    print!("{}", sluice_operator::crd::crd_yaml().unwrap());
}
