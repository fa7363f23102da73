module github.com/baton-go/baton/test/bench/peers/tableflip

go 1.25

require github.com/cloudflare/tableflip v1.2.3
