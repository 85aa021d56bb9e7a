use checkpoint_runtime::{Operator, OperatorResult, Output};

struct Counter {
    count: u64,
}

impl Operator for Counter {
    type Input = u64;
    type Output = ();
    fn process(&mut self, _n: u64, _out: Output<'_, ()>) -> OperatorResult {
        self.count += 1;
        Ok(())
    }
}

fn main() {}
