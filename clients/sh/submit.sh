#!/usr/bin/env bash
# submit.sh ORDER_ID CUSTOMER_NAME EMAIL ITEM... [--total AMOUNT]
# submit.sh [-] < order.json
#
# Starts order-processor for an order and prints the reply (run_id, foreign_id, status,
# created). ITEM is PRODUCT_ID:NAME:QUANTITY:PRICE (NAME may contain colons); the total is the
# exact sum of QUANTITY x PRICE unless --total is given. With no arguments, or "-", the order
# JSON object is read from stdin (it may span lines).
WF_USAGE='submit.sh ORDER_ID CUSTOMER_NAME EMAIL PRODUCT_ID:NAME:QUANTITY:PRICE... [--total AMOUNT]  |  submit.sh [-] < order.json'
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

args=()
total=''
while [ $# -gt 0 ]; do
    case "$1" in
    -h | --help) printf 'usage: %s\n' "$WF_USAGE"; exit 0 ;;
    --total) [ $# -ge 2 ] || wf_die_usage "--total needs a value"; total=$2; shift 2 ;;
    --total=*) total=${1#--total=}; shift ;;
    --) shift; args+=("$@"); break ;;
    -) args+=("$1"); shift ;;
    -*) wf_die_usage "unknown option: $1" ;;
    *) args+=("$1"); shift ;;
    esac
done

if [ ${#args[@]} -eq 0 ] || { [ ${#args[@]} -eq 1 ] && [ "${args[0]}" = - ]; }; then
    [ -z "$total" ] || wf_die_usage "--total only goes with an order given as arguments"
    order=$(cat)
    order=${order//$'\r'/ }
    order=${order//$'\n'/ }
    [[ $order =~ ^[[:space:]]*\{ ]] || wf_die_usage "stdin does not hold a JSON object"
    wf_call "{\"op\":\"submit\",\"order\":$order}"
fi

[ ${#args[@]} -ge 4 ] || wf_die_usage "give ORDER_ID CUSTOMER_NAME EMAIL and at least one item"
order_id=${args[0]} name=${args[1]} email=${args[2]}
items=''
scale=0
declare -a quantities=() prices=()
for item in "${args[@]:3}"; do
    [[ $item == *:*:*:* ]] || wf_die_usage "item '$item' is not PRODUCT_ID:NAME:QUANTITY:PRICE"
    price=${item##*:}
    rest=${item%:*}
    quantity=${rest##*:}
    rest=${rest%:*}
    product=${rest%%:*}
    pname=${rest#*:}
    wf_is_int "$quantity" || wf_die_usage "item '$item': quantity '$quantity' is not an integer"
    [[ $price =~ ^[0-9]+(\.[0-9]+)?$ ]] || wf_die_usage "item '$item': price '$price' is not a decimal number"
    # JSON numbers have no leading zeros: 012.50 -> 12.50
    int=${price%%.*}
    int=$((10#$int))
    if [[ $price == *.* ]]; then price="$int.${price#*.}"; else price=$int; fi
    frac=''
    [[ $price == *.* ]] && frac=${price#*.}
    [ ${#frac} -gt "$scale" ] && scale=${#frac}
    quantities+=("$quantity")
    prices+=("$price")
    [ -n "$items" ] && items+=','
    items+="{\"product_id\":$(wf_str "$product"),\"name\":$(wf_str "$pname"),\"quantity\":$quantity,\"price\":$price}"
done

if [ -n "$total" ]; then
    wf_is_number "$total" || wf_die_usage "--total '$total' is not a number"
else
    # Exact sum in units of 10^-scale.
    sum=0
    for i in "${!prices[@]}"; do
        p=${prices[$i]}
        int=${p%%.*}
        frac=''
        [[ $p == *.* ]] && frac=${p#*.}
        while [ ${#frac} -lt "$scale" ]; do frac+=0; done
        sum=$((sum + ${quantities[$i]} * 10#$int$frac))
    done
    sign=''
    if [ "$sum" -lt 0 ]; then sign='-'; sum=$((-sum)); fi
    if [ "$scale" -eq 0 ]; then
        total="$sign$sum"
    else
        digits=$(printf "%0$((scale + 1))d" "$sum")
        total="$sign${digits:0:${#digits}-scale}.${digits: -scale}"
    fi
fi

wf_call "{\"op\":\"submit\",\"order\":{\"id\":$(wf_str "$order_id"),\"customer_name\":$(wf_str "$name"),\"email\":$(wf_str "$email"),\"items\":[$items],\"total\":$total}}"
