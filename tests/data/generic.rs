//! A program for the probe tests, which build it with rustc alone, with v0
//! symbol mangling and no debug info: it prints its pid, then calls its
//! generic `twice` at two types every 2 ms.

use std::hint::black_box;
use std::ops::Add;
use std::time::Duration;

#[inline(never)]
fn twice<T: Add<Output = T> + Copy>(x: T) -> T {
    black_box(x + x)
}

fn main() {
    println!("pid {}", std::process::id());
    for i in 0u64.. {
        black_box(twice(i as u32));
        black_box(twice(i << 33));
        std::thread::sleep(Duration::from_millis(2));
    }
}
