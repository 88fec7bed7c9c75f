//! A valid component of another world: it exports `greet`, not `run`.
wit_bindgen::generate!({
    inline: "package test:other; world other { export greet: func() -> string; }",
});

struct Other;

impl Guest for Other {
    fn greet() -> String {
        "hi".into()
    }
}

export!(Other);
