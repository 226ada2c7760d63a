FROM alpine:3.20
LABEL costcenter 4100
LABEL businessunit retail
LABEL department ""
