"""bone-age: bone age estimation from whole-body bone scintigraphy."""
