module allocator

go 1.21
