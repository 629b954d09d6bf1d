"""bone-age: bone age estimation from whole-body bone scintigraphy."""

from bone_age.utils.onednn import cap_isa_without_amx

# Before torch runs anything: oneDNN's AMX bf16 kernels corrupted CPU training
# (docs/performance.md); the cap must be in place before oneDNN's first primitive.
cap_isa_without_amx()
