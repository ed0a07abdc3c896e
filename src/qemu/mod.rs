//! QEMU: the command-line builder, accelerator detection and QMP control.
