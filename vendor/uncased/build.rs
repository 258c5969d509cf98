fn main() {
    // PATCH(spillway): declare the cfgs set below (see PATCHES.md, 2).
    println!("cargo:rustc-check-cfg=cfg(nightly)");
    println!("cargo:rustc-check-cfg=cfg(const_fn_transmute)");

    if let Some(true) = version_check::is_feature_flaggable() {
        println!("cargo:rustc-cfg=nightly");
    }

    if let Some(true) = version_check::is_min_version("1.56.0") {
        println!("cargo:rustc-cfg=const_fn_transmute");
    }
}
