module memscandemo

go 1.21
